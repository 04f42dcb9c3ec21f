import { router } from '../trpc.js';

/** API keys (create, list, revoke, rotate) arrive with the API keys feature. */
export const keysRouter = router({});
