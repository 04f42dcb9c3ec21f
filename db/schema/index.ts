export * from './api-keys.js';
export * from './signing-keys.js';
export * from './tenants.js';
