/**
 * Reads the export script's output as it streams: three lines (guest path, base, byte count of
 * the name-status list), the list (`git diff --name-status -z`), then the patch, which is handed
 * on chunk by chunk and never kept.
 */
import type { WorkspaceChange, WorkspaceExportHead } from '../../core/api-types.ts';
import { KilnError } from '../../core/errors.ts';

/** `git diff --name-status -z` output as changes (R/C entries carry two paths). */
export function parseNameStatus(raw: string): WorkspaceChange[] {
  const t = raw.split('\0');
  const out: WorkspaceChange[] = [];
  for (let i = 0; i + 1 < t.length;) {
    const st = t[i] ?? '';
    const letter = st.charAt(0);
    if (letter === 'R' || letter === 'C') {
      out.push({ status: letter, from: t[i + 1] ?? '', path: t[i + 2] ?? '' });
      i += 3;
    } else {
      out.push({ status: letter, path: t[i + 1] ?? '' });
      i += 2;
    }
  }
  return out;
}

export class ExportParser {
  #buf = Buffer.alloc(0);
  #head: WorkspaceExportHead | undefined;
  readonly #onHead: (h: WorkspaceExportHead) => void | Promise<void>;
  readonly #onPatch: (b: Uint8Array) => void | Promise<void>;

  constructor(
    onHead: (h: WorkspaceExportHead) => void | Promise<void>,
    onPatch: (b: Uint8Array) => void | Promise<void>,
  ) {
    this.#onHead = onHead;
    this.#onPatch = onPatch;
  }

  get started(): boolean {
    return this.#head !== undefined;
  }

  async feed(chunk: Uint8Array): Promise<void> {
    if (this.#head) {
      await this.#onPatch(chunk);
      return;
    }
    this.#buf = Buffer.concat([this.#buf, chunk]);
    let at = 0;
    const lines: string[] = [];
    for (let n = 0; n < 3; n++) {
      const nl = this.#buf.indexOf(10, at);
      if (nl < 0) return;
      lines.push(this.#buf.subarray(at, nl).toString('utf8'));
      at = nl + 1;
    }
    const size = Number(lines[2]);
    if (!Number.isSafeInteger(size) || size < 0)
      throw new KilnError('guest_agent_error', `the export's header is malformed: ${JSON.stringify(lines)}`);
    if (this.#buf.length < at + size) return;
    const head: WorkspaceExportHead = {
      guestPath: lines[0] ?? '',
      base: lines[1] ?? '',
      files: parseNameStatus(this.#buf.subarray(at, at + size).toString('utf8')),
    };
    const rest = this.#buf.subarray(at + size);
    this.#buf = Buffer.alloc(0);
    this.#head = head;
    await this.#onHead(head);
    if (rest.length > 0) await this.#onPatch(rest);
  }

  /** The head, once the stream ended (an empty patch ends right after it). */
  head(): WorkspaceExportHead | undefined {
    return this.#head;
  }
}
