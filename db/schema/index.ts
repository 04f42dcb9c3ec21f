export * from './signing-keys.js';
export * from './tenants.js';
