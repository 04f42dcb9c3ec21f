import type { Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { AppError, errorBody } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import { SECURITY_HEADERS } from './middleware.js';

/**
 * Requests Node's parser refuses before any app runs — a URL or headers over its limit (16 KiB),
 * malformed HTTP, a request too slow to arrive — answered in the one error shape with a request id
 * and the security headers, instead of Node's bare status line. The connection is closed after.
 */
export function answerClientErrors(server: Server, log: Logger): void {
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Duplex) => {
    if (error.code === 'ECONNRESET' || !socket.writable || responseStarted(socket)) {
      socket.destroy();
      return;
    }
    const appError = refusal(error.code);
    const requestId = crypto.randomUUID();
    log.info(
      { requestId, status: appError.status, reason: error.code },
      'request refused by the HTTP parser',
    );
    const body = JSON.stringify(errorBody(appError, requestId));
    const head = [
      `HTTP/1.1 ${appError.status} ${REASONS[appError.status] ?? 'Bad Request'}`,
      'Content-Type: application/json',
      `Content-Length: ${Buffer.byteLength(body)}`,
      'Connection: close',
      `X-Request-Id: ${requestId}`,
      ...SECURITY_HEADERS.map(([name, value]) => `${name}: ${value}`),
    ];
    socket.end(`${head.join('\r\n')}\r\n\r\n${body}`, () => socket.destroy());
  });
}

const REASONS: Record<number, string> = {
  400: 'Bad Request',
  408: 'Request Timeout',
  413: 'Payload Too Large',
  431: 'Request Header Fields Too Large',
};

/** The same statuses Node's own handler sends, as AppErrors. */
function refusal(code: string | undefined): AppError {
  switch (code) {
    case 'HPE_HEADER_OVERFLOW':
      return new AppError('headers_too_large', 'The request line and headers exceed the server limit');
    case 'HPE_CHUNK_EXTENSIONS_OVERFLOW':
      return new AppError('payload_too_large', 'Chunk extensions exceed the server limit');
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return new AppError('request_timeout', 'The request took too long to arrive');
    default:
      return new AppError('invalid_request', 'Malformed HTTP request');
  }
}

/** Node links a socket to the response it is writing; a second status line must not follow one. */
function responseStarted(socket: Duplex): boolean {
  return (socket as Duplex & { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent === true;
}
