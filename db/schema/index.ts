export * from './tenants.js';
