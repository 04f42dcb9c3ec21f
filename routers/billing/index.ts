import { router } from '../trpc.js';

/** Balances, packs, invoices and payments arrive with the billing feature. */
export const billingRouter = router({});
