/** The package's public surface for internal tools and embedding. */
export { createApp } from './app.js';
export { type AppRouter, type Client, type ClientOptions, createClient } from './client.js';
export type { Config } from './config.js';
export { AppError, type ErrorCode } from './errors.js';
export type { Services } from './services.js';
export { createVerifier, type VerifierOptions } from './signing/verifier.js';
