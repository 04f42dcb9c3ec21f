export * from './tenants.js';
export * from './signing-keys.js';
