/**
 * Kernel same-page merging (KSM) for guest memory. QEMU marks every guest's RAM mergeable
 * (`mem-merge`, on by default), but the kernel's scanner (ksmd) only runs when asked, host-wide.
 * With it on, pages that clones hold identically are shared, and memory a guest frees (zeroed by
 * the guest kernel's `init_on_free`, see args.ts) becomes the shared zero page: a sandbox gives
 * back what it allocated and freed. ksmd costs host CPU; bench/density prints it.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { KilnError } from '../../core/errors.ts';

export const KSM_DIR = '/sys/kernel/mm/ksm';

/**
 * Starts ksmd (`run` = 1) with freed-and-zeroed pages merged into the zero page
 * (`use_zero_pages` = 1). Host-wide and left on when kilnd stops (other kilnds may rely on it).
 * Returns whether it was off before.
 */
export async function enableKsm(dir = KSM_DIR): Promise<{ wasOff: boolean }> {
  let run: string;
  try {
    run = (await readFile(join(dir, 'run'), 'utf8')).trim();
  } catch (e) {
    throw new KilnError(
      'missing_tool',
      `KILN_KSM=on but this kernel has no KSM (${dir}: ${(e as NodeJS.ErrnoException).code ?? String(e)}); build it with CONFIG_KSM or set KILN_KSM=off`,
    );
  }
  try {
    // use_zero_pages can only change while no page is merged; once set it stays.
    if ((await readFile(join(dir, 'use_zero_pages'), 'utf8')).trim() !== '1')
      await writeFile(join(dir, 'use_zero_pages'), '1').catch(() => undefined);
    if (run !== '1') await writeFile(join(dir, 'run'), '1');
  } catch (e) {
    throw new KilnError(
      'permission_denied',
      `KILN_KSM=on but ${dir}/run cannot be written (${(e as NodeJS.ErrnoException).code ?? String(e)}): run kilnd as root`,
    );
  }
  return { wasOff: run !== '1' };
}
