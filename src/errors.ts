import { TRPCError } from '@trpc/server';
import type { TRPC_ERROR_CODE_KEY } from '@trpc/server/rpc';

/**
 * The one error type. Domain code throws `AppError` for faults and refusals a caller must see;
 * raw routes render it as `{"error":{"code","message","requestId",...details}}` (DESIGN.md §4) and
 * tRPC maps it through `toTRPCError`. Everything else is an internal error: logged with its stack,
 * answered with a generic message and never a stack.
 */
const ERRORS = {
  invalid_request: { status: 400, trpc: 'BAD_REQUEST' },
  unknown_pool: { status: 400, trpc: 'BAD_REQUEST' },
  unauthorized: { status: 401, trpc: 'UNAUTHORIZED' },
  budget_exceeded: { status: 402, trpc: 'PAYMENT_REQUIRED' },
  forbidden: { status: 403, trpc: 'FORBIDDEN' },
  tenant_frozen: { status: 403, trpc: 'FORBIDDEN' },
  not_found: { status: 404, trpc: 'NOT_FOUND' },
  model_not_found: { status: 404, trpc: 'NOT_FOUND' },
  method_not_allowed: { status: 405, trpc: 'METHOD_NOT_SUPPORTED' },
  request_timeout: { status: 408, trpc: 'TIMEOUT' },
  conflict: { status: 409, trpc: 'CONFLICT' },
  payload_too_large: { status: 413, trpc: 'PAYLOAD_TOO_LARGE' },
  unsupported_media_type: { status: 415, trpc: 'UNSUPPORTED_MEDIA_TYPE' },
  rate_limited: { status: 429, trpc: 'TOO_MANY_REQUESTS' },
  headers_too_large: { status: 431, trpc: 'BAD_REQUEST' },
  internal_error: { status: 500, trpc: 'INTERNAL_SERVER_ERROR' },
  not_ready: { status: 503, trpc: 'SERVICE_UNAVAILABLE' },
  store_unavailable: { status: 503, trpc: 'SERVICE_UNAVAILABLE' },
  upstream_unavailable: { status: 503, trpc: 'SERVICE_UNAVAILABLE' },
  /** A feature switched off (`PAYMENTS=off`) or not configured (no NOWPayments secret or key). */
  feature_disabled: { status: 503, trpc: 'SERVICE_UNAVAILABLE' },
  /** The payment provider's API failed or timed out (createInvoice, reconciliation). */
  provider_unavailable: { status: 503, trpc: 'SERVICE_UNAVAILABLE' },
} as const satisfies Record<string, { status: number; trpc: TRPC_ERROR_CODE_KEY }>;

export type ErrorCode = keyof typeof ERRORS;
export type ErrorStatus = (typeof ERRORS)[ErrorCode]['status'];

/** Extra members of the error body, e.g. `{ dimension, retryAfterMs }` on 429. Must be safe to show. */
export type ErrorDetails = Record<string, unknown>;

export class AppError extends Error {
  override readonly name = 'AppError';
  readonly code: ErrorCode;
  readonly details: ErrorDetails;

  constructor(code: ErrorCode, message: string, details: ErrorDetails = {}) {
    super(message);
    this.code = code;
    this.details = details;
  }

  get status(): ErrorStatus {
    return ERRORS[this.code].status;
  }
}

export interface ErrorBody {
  error: { code: ErrorCode; message: string; requestId: string } & ErrorDetails;
}

export function errorBody(error: AppError, requestId: string): ErrorBody {
  return { error: { ...error.details, code: error.code, message: error.message, requestId } };
}

/** Whatever was thrown, as an AppError; anything unexpected becomes a generic internal error. */
export function asAppError(thrown: unknown): AppError {
  if (thrown instanceof AppError) return thrown;
  return new AppError('internal_error', 'Internal error');
}

export function toTRPCError(error: AppError): TRPCError {
  return new TRPCError({ code: ERRORS[error.code].trpc, message: error.message, cause: error });
}
