import pkg from '../package.json' with { type: 'json' };

/** The gateway's release, from package.json. */
export const VERSION: string = pkg.version;

/** The S2S contract spicegate speaks to upstreams (DESIGN.md §4); a major change is incompatible. */
export const CONTRACT_VERSION = '1.0.0';
