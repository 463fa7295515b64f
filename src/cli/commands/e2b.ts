/** `kiln e2b env`. */
import { UsageError } from '../args.ts';
import type { CliContext } from '../context.ts';

const shellQuote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

export async function e2b(ctx: CliContext, sub: string | undefined): Promise<number> {
  if (sub !== 'env') throw new UsageError(`unknown command "kiln e2b ${sub ?? ''}"`);
  const c = await ctx.connect();
  const e = await c.e2bEnv();
  console.log(
    // The volume content API is served by the E2B API (the SDK would go to https://api.<domain>).
    `export E2B_API_URL=${shellQuote(e.apiUrl)} E2B_SANDBOX_URL=${shellQuote(e.sandboxUrl)} E2B_API_KEY=${shellQuote(e.apiKey)} E2B_VOLUME_API_URL=${shellQuote(e.apiUrl)}`,
  );
  return 0;
}
