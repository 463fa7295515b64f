/** Test code only: the slots of instance `tag` on this host, from `ip` (kilnd's view aside). */
import { execFileSync } from 'node:child_process';
import { slotOfInterface, slotOfNamespace } from '../names.ts';

/** The indexes of instance `tag`'s slots with a namespace, and with a host link, sorted. */
export function hostSlots(tag: string): { namespaces: number[]; links: number[] } {
  const sorted = (xs: (number | undefined)[]): number[] =>
    xs.filter((x) => x !== undefined).sort((a, b) => a - b);
  const namespaces = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => slotOfNamespace(tag, l.split(' ')[0] ?? ''));
  const links = execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => slotOfInterface(tag, /^\d+: ([^:@]+)/.exec(l)?.[1] ?? ''));
  return { namespaces: sorted(namespaces), links: sorted(links) };
}
