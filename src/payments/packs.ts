import { AppError } from '../errors.js';

/** A credit pack (DESIGN.md §4): what the payer is invoiced and the credits a finished payment mints. */
export interface Pack {
  name: string;
  /** The price as the provider is asked for it: a decimal string in `priceCurrency`. */
  priceAmount: string;
  priceCurrency: 'usd';
  creditsMicro: bigint;
}

/** DESIGN.md §4: $5 → 5,000,000 µ; $10 → 10,500,000 µ; $25 → 27,500,000 µ. */
export const DEFAULT_PACKS: Record<string, Pack> = {
  starter: { name: 'starter', priceAmount: '5', priceCurrency: 'usd', creditsMicro: 5_000_000n },
  standard: { name: 'standard', priceAmount: '10', priceCurrency: 'usd', creditsMicro: 10_500_000n },
  premium: { name: 'premium', priceAmount: '25', priceCurrency: 'usd', creditsMicro: 27_500_000n },
};

/** `PAYMENT_PACKS` (`starter=5:5000000,standard=10:10500000`), already checked by its pattern. */
export function parsePacks(text: string): Record<string, Pack> {
  return Object.fromEntries(
    text.split(',').map((pair) => {
      const [name = '', rest = ''] = pair.split('=');
      const [priceAmount = '', credits = ''] = rest.split(':');
      return [name, { name, priceAmount, priceCurrency: 'usd', creditsMicro: BigInt(credits) }];
    }),
  );
}

/** The pack named `name`, or 400 naming the packs there are. */
export function findPack(packs: Record<string, Pack>, name: string): Pack {
  const pack = Object.hasOwn(packs, name) ? packs[name] : undefined;
  if (pack === undefined) {
    throw new AppError('invalid_request', `Unknown pack ${name}; packs: ${Object.keys(packs).join(', ')}`, {
      field: 'pack',
    });
  }
  return pack;
}
