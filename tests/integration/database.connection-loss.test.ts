import { sql } from 'drizzle-orm';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

/**
 * postgres.js 3.4.9 writes a transaction's next statement to a socket its connection already
 * closed and throws from a timer, taking the whole process down (porsager/postgres#1208); the
 * gateway patches it (patches/, applied by `npm install`). A transaction whose connection dies
 * while its callback runs must fail like any database fault, and the pool carry on.
 */
let database: TestDatabase;

beforeAll(async () => {
  database = await createTestDatabase(inject('databaseUrl'));
});
afterAll(async () => {
  await database.drop();
});

describe('a database connection killed inside a transaction', () => {
  it('fails that transaction with CONNECTION_CLOSED, also for statements after the kill, and the pool serves the next query', async () => {
    if (database.url === undefined) throw new Error('this test needs the PostgreSQL server (DATABASE_URL)');
    const killer = postgres(database.url, { max: 1, onnotice: () => {} });
    const late: unknown[] = [];
    try {
      const attempt = database.handle.db.transaction(async (tx) => {
        const [row] = (await tx.execute(sql`select pg_backend_pid() as pid`)) as unknown as { pid: number }[];
        await killer`select pg_terminate_backend(${row?.pid ?? 0})`;
        // The callback goes on after its connection closed, as a slow one would.
        await new Promise((resolve) => setTimeout(resolve, 200));
        await tx.execute(sql`select 1`).catch((error: unknown) => late.push(error));
      });
      await expect(attempt).rejects.toMatchObject({ code: 'CONNECTION_CLOSED' });
      await new Promise((resolve) => setTimeout(resolve, 300));
    } finally {
      await killer.end();
    }
    // drizzle wraps the driver's error; the driver's says what happened.
    expect(late.map((error) => (error as { cause?: { code?: string } }).cause?.code)).toEqual([
      'CONNECTION_CLOSED',
    ]);
    const [after] = (await database.handle.db.execute(sql`select 2 as two`)) as unknown as { two: number }[];
    expect(after?.two).toBe(2);
  });
});
