/**
 * "Build the default template on first use": a create that names the default template (`base`)
 * while no ready template of that name exists builds it first, once however many creates wait.
 * The native create, the E2B create and (through the native create) the CLI all go through here.
 * Other templates are never built implicitly: a create naming one that does not exist is
 * answered by the service (`not_found`).
 */
import { DEFAULT_TEMPLATE, DEFAULT_TEMPLATE_RESOURCES } from '../core/defaults.ts';
import type { TemplateRecord } from '../core/domain.ts';
import type { SandboxService } from './sandbox-service.ts';

/** Builds (or rebuilds) a template; the composition root supplies the image side. */
export type TemplateBuilder = (
  name: string,
  res: { memoryMiB: number; vcpus: number },
  opId: string,
) => Promise<TemplateRecord>;

export class TemplateEnsurer {
  readonly #svc: Pick<SandboxService, 'templates' | 'templateReady'>;
  readonly #build: TemplateBuilder;
  #building: Promise<unknown> | undefined;

  constructor(svc: Pick<SandboxService, 'templates' | 'templateReady'>, build: TemplateBuilder) {
    this.#svc = svc;
    this.#build = build;
  }

  /** True when sandboxes can be made from a template of this name now. */
  ready(name: string): boolean {
    return this.#svc.templates().some((t) => t.name === name && this.#svc.templateReady(t));
  }

  /**
   * Makes sure `name` can be created from: the default template is built when it is missing or
   * not ready (built by an older kiln); any other name is left to the create to resolve.
   */
  async ensure(name: string, opId: string): Promise<void> {
    if (name !== DEFAULT_TEMPLATE || this.ready(name)) return;
    this.#building ??= this.#build(DEFAULT_TEMPLATE, { ...DEFAULT_TEMPLATE_RESOURCES }, opId).finally(() => {
      this.#building = undefined;
    });
    await this.#building;
  }
}
