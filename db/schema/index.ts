export * from './api-keys.js';
export * from './conservation.js';
export * from './credit-grants.js';
export * from './ledger.js';
export * from './pool-decisions.js';
export * from './signing-keys.js';
export * from './spend.js';
export * from './tenants.js';
