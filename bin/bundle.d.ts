/** Bundles `entry` (a path under the project root) and returns the file URL of the built module. */
export function bundle(entry: string): Promise<string>;
