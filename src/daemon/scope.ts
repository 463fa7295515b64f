import type { TemplateRecord } from '../core/domain.ts';

/**
 * Who acts, when it is an API key (the E2B API): objects it creates belong to it, and it sees
 * only its own unless it is an admin key. No caller (the native API on kilnd's root-only unix
 * socket, kiln's own background work) sees and acts on everything.
 */
export interface Caller {
  keyId: string;
  admin: boolean;
}

/** Whether `caller` may see an object owned by `ownerKeyId` (null: no key's, admins only). */
export function sees(caller: Caller | undefined, ownerKeyId: string | null): boolean {
  return !caller || caller.admin || (ownerKeyId !== null && ownerKeyId === caller.keyId);
}

/** Templates kiln builds itself (no owner) are everyone's; a key's own are its own. */
export function seesTemplate(caller: Caller | undefined, t: TemplateRecord): boolean {
  return t.ownerKeyId === null || sees(caller, t.ownerKeyId);
}
