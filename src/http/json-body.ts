import type { Context } from 'hono';
import { AppError } from '../errors.js';

/**
 * The body of a JSON route, parsed: 415 `unsupported_media_type` when the request declares another
 * content type (curl's `-d` sends a form type unless told otherwise), 400 `invalid_request` when
 * the body is not JSON. A request with no Content-Type is read as JSON. Thrown, so the app's
 * error handler answers in the route's shape.
 */
export async function readJson(c: Context): Promise<unknown> {
  const type = c.req.header('content-type');
  if (type !== undefined && mediaType(type) !== 'application/json') {
    throw new AppError('unsupported_media_type', 'Content-Type must be application/json', {
      contentType: type.slice(0, 100),
    });
  }
  try {
    return await c.req.json();
  } catch {
    throw new AppError('invalid_request', 'Invalid request: invalid JSON');
  }
}

/** `Application/JSON; charset=utf-8` → `application/json` (media types are case-insensitive). */
function mediaType(header: string): string {
  return (header.split(';', 1)[0] ?? '').trim().toLowerCase();
}
