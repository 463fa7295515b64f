/**
 * The native API's body types (core/api-types.ts) against docs/openapi.json: every field table
 * (which the compiler keeps equal to its type) names exactly the properties the spec documents,
 * and the routes answer the schema their type says. A field added on one side only fails here.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import {
  API_KEY_VIEW_FIELDS,
  BUILD_TEMPLATE_FIELDS,
  CREATE_SANDBOX_FIELDS,
  EXEC_FIELDS,
  FORK_FIELDS,
  NETWORK_REQUEST_FIELDS,
  NETWORK_VIEW_FIELDS,
  RESTORE_SNAPSHOT_FIELDS,
  SANDBOX_VIEW_FIELDS,
  SNAPSHOT_VIEW_FIELDS,
  PORT_VIEW_FIELDS,
  STATS_VIEW_FIELDS,
  TEMPLATE_VIEW_FIELDS,
  UPDATE_NETWORK_FIELDS,
  VOLUME_VIEW_FIELDS,
  WARM_POOL_VIEW_FIELDS,
  SET_WARM_POOL_FIELDS,
  TEMPLATE_GC_FIELDS,
  TEMPLATE_GC_ITEM_VIEW_FIELDS,
  TEMPLATE_GC_VIEW_FIELDS,
  WORKSPACE_VIEW_FIELDS,
} from './api-types.ts';

interface Schema {
  $ref?: string;
  required?: string[];
  properties?: Record<string, Schema>;
  items?: Schema;
  allOf?: Schema[];
}
interface Operation {
  requestBody?: { content: Record<string, { schema: Schema }> };
  responses: Record<string, { content?: Record<string, { schema: Schema }> }>;
}
const doc = JSON.parse(readFileSync(new URL('../../docs/openapi.json', import.meta.url), 'utf8')) as {
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, Schema> };
};

const keys = (o: object): string[] => Object.keys(o).sort();
const op = (method: string, path: string): Operation => {
  const o = doc.paths[path]?.[method];
  assert.ok(o, `${method.toUpperCase()} ${path} is documented`);
  return o;
};
const requestProps = (method: string, path: string): string[] =>
  keys(op(method, path).requestBody?.content['application/json']?.schema.properties ?? {});
const responseSchema = (method: string, path: string, status: string): Schema | undefined =>
  op(method, path).responses[status]?.content?.['application/json']?.schema;

describe('core/api-types.ts against docs/openapi.json', () => {
  it('each response schema lists exactly the fields of its view type, all of them required', () => {
    for (const [name, table] of [
      ['Sandbox', SANDBOX_VIEW_FIELDS],
      ['Template', TEMPLATE_VIEW_FIELDS],
      ['Snapshot', SNAPSHOT_VIEW_FIELDS],
      ['Stats', STATS_VIEW_FIELDS],
      ['Port', PORT_VIEW_FIELDS],
      ['ApiKey', API_KEY_VIEW_FIELDS],
      ['Network', NETWORK_VIEW_FIELDS],
      ['Volume', VOLUME_VIEW_FIELDS],
      ['Workspace', WORKSPACE_VIEW_FIELDS],
      ['WarmPool', WARM_POOL_VIEW_FIELDS],
      ['TemplateGc', TEMPLATE_GC_VIEW_FIELDS],
      ['TemplateGcItem', TEMPLATE_GC_ITEM_VIEW_FIELDS],
    ] as const) {
      const s = doc.components.schemas[name];
      assert.ok(s, `components.schemas.${name} exists`);
      assert.deepEqual(keys(s.properties ?? {}), keys(table), `${name}: properties`);
      assert.deepEqual([...(s.required ?? [])].sort(), keys(table), `${name}: required`);
    }
  });

  it('each request body lists exactly the fields of its request type', () => {
    for (const [method, path, table] of [
      ['post', '/v1/sandboxes', CREATE_SANDBOX_FIELDS],
      ['post', '/v1/snapshots/{id}/restore', RESTORE_SNAPSHOT_FIELDS],
      ['post', '/v1/templates', BUILD_TEMPLATE_FIELDS],
      ['post', '/v1/sandboxes/{id}/exec', EXEC_FIELDS],
      ['post', '/v1/sandboxes/{id}/fork', FORK_FIELDS],
      ['put', '/v1/sandboxes/{id}/network', UPDATE_NETWORK_FIELDS],
      ['put', '/v1/templates/{id}/warm-pool', SET_WARM_POOL_FIELDS],
      ['post', '/v1/templates/gc', TEMPLATE_GC_FIELDS],
    ] as const)
      assert.deepEqual(requestProps(method, path), keys(table), `${method.toUpperCase()} ${path}`);
    assert.deepEqual(requestProps('post', '/v1/sandboxes/{id}/timeout'), ['timeoutS']);
    assert.deepEqual(requestProps('post', '/v1/sandboxes/{id}/resume'), ['memory', 'timeoutS']);
    assert.deepEqual(requestProps('post', '/v1/sandboxes/{id}/snapshots'), ['name']);
    assert.deepEqual(requestProps('post', '/v1/api-keys'), ['admin', 'name']);
    assert.deepEqual(
      keys(doc.components.schemas['NetworkRequest']?.properties ?? {}),
      keys(NETWORK_REQUEST_FIELDS),
      'NetworkRequest',
    );
  });

  it('routes answer the schema of their view type', () => {
    const ref = (n: string): Schema => ({ $ref: `#/components/schemas/${n}` });
    const list = (n: string): Schema | undefined =>
      responseSchema('get', n, '200')?.properties?.['items']?.items;
    for (const [method, path, status, schema] of [
      ['post', '/v1/sandboxes', '201', 'Sandbox'],
      ['get', '/v1/sandboxes/{id}', '200', 'Sandbox'],
      ['post', '/v1/sandboxes/{id}/timeout', '200', 'Sandbox'],
      ['post', '/v1/sandboxes/{id}/pause', '200', 'Sandbox'],
      ['post', '/v1/sandboxes/{id}/resume', '200', 'Sandbox'],
      ['put', '/v1/sandboxes/{id}/network', '200', 'Sandbox'],
      ['post', '/v1/snapshots/{id}/restore', '201', 'Sandbox'],
      ['get', '/v1/sandboxes/{id}/stats', '200', 'Stats'],
      ['post', '/v1/templates', '201', 'Template'],
      ['post', '/v1/sandboxes/{id}/snapshots', '201', 'Snapshot'],
      ['get', '/v1/snapshots/{id}', '200', 'Snapshot'],
      ['post', '/v1/snapshots/import', '201', 'Snapshot'],
      ['post', '/v1/sandboxes/{id}/workspace', '200', 'Workspace'],
      ['get', '/v1/templates/{id}/warm-pool', '200', 'WarmPool'],
      ['put', '/v1/templates/{id}/warm-pool', '200', 'WarmPool'],
      ['post', '/v1/templates/gc', '200', 'TemplateGc'],
    ] as const)
      assert.deepEqual(responseSchema(method, path, status), ref(schema), `${method.toUpperCase()} ${path}`);
    assert.deepEqual(list('/v1/sandboxes'), ref('Sandbox'));
    assert.deepEqual(list('/v1/templates'), ref('Template'));
    assert.deepEqual(list('/v1/snapshots'), ref('Snapshot'));
    assert.deepEqual(list('/v1/api-keys'), ref('ApiKey'));
    assert.deepEqual(list('/v1/warm-pool'), ref('WarmPool'));
    assert.deepEqual(responseSchema('post', '/v1/api-keys', '201')?.allOf?.[0], ref('ApiKey'));
  });
});
