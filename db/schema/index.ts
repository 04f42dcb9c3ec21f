export * from './api-keys.js';
export * from './signing-keys.js';
export * from './spend.js';
export * from './tenants.js';
