import { adminRouter } from './admin/index.js';
import { billingRouter } from './billing/index.js';
import { keysRouter } from './keys/index.js';
import { router } from './trpc.js';

export const appRouter = router({
  admin: adminRouter,
  keys: keysRouter,
  billing: billingRouter,
});

/** The type internal tools import for a typed client (see src/client.ts). */
export type AppRouter = typeof appRouter;
