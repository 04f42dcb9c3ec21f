import * as v from 'valibot';

/** A setting written as JSON text (`TIERS`, `POOL_LIMITS`): parsed, or `message` as the issue. */
export const jsonSetting = (message: string) =>
  v.pipe(
    v.string(),
    v.rawTransform(({ dataset, addIssue, NEVER }) => {
      try {
        return JSON.parse(dataset.value) as unknown;
      } catch {
        addIssue({ message });
        return NEVER;
      }
    }),
  );
