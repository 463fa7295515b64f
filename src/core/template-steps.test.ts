import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { inspect } from 'node:util';
import {
  changesVm,
  describeStep,
  isInternalSnapshotName,
  layerKey,
  layerName,
  logsFrom,
  parseBuildSpec,
  rootLayerKey,
  splitNameTag,
} from './template-steps.ts';

const HASH = 'a'.repeat(64);

describe('parseBuildSpec', () => {
  it('parses the steps the e2b SDK sends (its helpers arrive as RUN)', () => {
    const spec = parseBuildSpec({
      fromTemplate: 'base',
      force: false,
      startCmd: 'python3 -m http.server 8000',
      readyCmd: '[ -n "$(ss -Htuln sport = :8000)" ]',
      steps: [
        { type: 'RUN', args: ['apt-get update && apt-get install -y curl', 'root'], force: false },
        { type: 'COPY', args: ['app', '/home/user/app', 'user', '0755'], filesHash: HASH, force: true },
        { type: 'ENV', args: ['A', '1', 'B', 'two words'] },
        { type: 'WORKDIR', args: ['/home/user/app'] },
        { type: 'USER', args: ['root'] },
      ],
    });
    assert.deepEqual(spec, {
      from: { template: 'base' },
      startCmd: 'python3 -m http.server 8000',
      readyCmd: '[ -n "$(ss -Htuln sport = :8000)" ]',
      force: false,
      steps: [
        { kind: 'RUN', cmd: 'apt-get update && apt-get install -y curl', user: 'root', force: false },
        {
          kind: 'COPY',
          src: 'app',
          dest: '/home/user/app',
          user: 'user',
          mode: 0o755,
          filesHash: HASH,
          force: true,
        },
        {
          kind: 'ENV',
          envs: [
            ['A', '1'],
            ['B', 'two words'],
          ],
          force: false,
        },
        { kind: 'WORKDIR', path: '/home/user/app', force: false },
        { kind: 'USER', user: 'root', force: false },
      ],
    });
    assert.deepEqual(spec.steps.map(changesVm), [true, true, false, false, false]);
    assert.deepEqual(parseBuildSpec({ fromImage: 'e2bdev/base' }).from, { image: 'e2bdev/base' });
  });

  it('refuses bad input naming the field', () => {
    const bad: [Record<string, unknown>, RegExp][] = [
      [{}, /fromTemplate: exactly one of fromImage and fromTemplate/],
      [{ fromTemplate: 'a', fromImage: 'b' }, /exactly one/],
      [{ fromTemplate: 'a', steps: {} }, /steps: must be an array/],
      [
        { fromTemplate: 'a', steps: [{ type: 'EXPOSE', args: ['80'] }] },
        /steps\[0\]\.type: "EXPOSE" is not a step kiln runs/,
      ],
      [{ fromTemplate: 'a', steps: [{ type: 'RUN', args: [] }] }, /steps\[0\]\.args: RUN needs a command/],
      [{ fromTemplate: 'a', steps: [{ type: 'RUN', args: [1] }] }, /must be an array of strings/],
      [
        { fromTemplate: 'a', steps: [{ type: 'COPY', args: ['a', '/b'] }] },
        /steps\[0\]\.filesHash: must be a string/,
      ],
      [
        { fromTemplate: 'a', steps: [{ type: 'COPY', args: ['../x', '/b'], filesHash: HASH }] },
        /inside the build context/,
      ],
      [
        { fromTemplate: 'a', steps: [{ type: 'COPY', args: ['a', '/b', '', '999'], filesHash: HASH }] },
        /not an octal mode/,
      ],
      [{ fromTemplate: 'a', steps: [{ type: 'ENV', args: ['A'] }] }, /ENV needs name\/value pairs/],
      [{ fromTemplate: 'a', steps: [{ type: 'ENV', args: ['1A', 'x'] }] }, /"1A" is not a variable name/],
      [{ fromTemplate: 'a', steps: [{ type: 'USER', args: ['Bad User'] }] }, /is not a user name/],
      [
        { fromTemplate: 'a', steps: [{ type: 'COPY', args: ['a', '/b'], filesHash: '../../etc' }] },
        /not a files hash/,
      ],
    ];
    for (const [body, re] of bad) assert.throws(() => parseBuildSpec(body), re, JSON.stringify(body));
  });
});

describe('fromImageRegistry (E2B registry credentials)', () => {
  const withRegistry = (r: unknown) => ({ fromImage: 'reg.example:5000/team/app:1', fromImageRegistry: r });
  const field = (e: unknown): unknown => (e as { details?: { field?: unknown } }).details?.field;

  it("type registry: the image's credentials, kept in memory and hidden from every printed form", () => {
    const spec = parseBuildSpec(withRegistry({ type: 'registry', username: 'robot', password: 's3cret:x' }));
    assert.ok('image' in spec.from);
    const login = 'image' in spec.from ? spec.from.registry : undefined;
    assert.ok(login);
    assert.equal(login.username, 'robot');
    assert.equal(login.password, 's3cret:x');
    // A copy (structured clone, as a spread) keeps the user name only.
    for (const shown of [JSON.stringify(spec), inspect(spec, { depth: 9 }), inspect(structuredClone(login))])
      assert.ok(!shown.includes('s3cret'), shown);
    assert.deepEqual((JSON.parse(JSON.stringify(spec)) as { from: unknown }).from, {
      image: 'reg.example:5000/team/app:1',
      registry: { type: 'registry' },
    });
  });

  it('absent or null is no credentials; with fromTemplate they are checked but not kept', () => {
    for (const r of [undefined, null])
      assert.deepEqual(parseBuildSpec(withRegistry(r)).from, { image: 'reg.example:5000/team/app:1' });
    const login = { type: 'registry', username: 'u', password: 'p' };
    assert.deepEqual(parseBuildSpec({ fromTemplate: 'base', fromImageRegistry: login }).from, {
      template: 'base',
    });
    assert.throws(
      () => parseBuildSpec({ fromTemplate: 'base', fromImageRegistry: { type: 'registry' } }),
      /username/,
    );
  });

  it('aws is refused naming the type, why, and what to send instead', () => {
    const aws = {
      type: 'aws',
      awsAccessKeyId: 'AKIA',
      awsSecretAccessKey: 'SECRETKEY1',
      awsRegion: 'us-east-1',
    };
    assert.throws(
      () => parseBuildSpec(withRegistry(aws)),
      (e: Error) =>
        field(e) === 'fromImageRegistry.type' &&
        /"aws" is not supported: kiln does not call AWS .*username "AWS".*aws ecr get-login-password/.test(
          e.message,
        ) &&
        !e.message.includes('SECRETKEY1'),
    );
  });

  it('gcp: the service account JSON is the password of user "_json_key" (as E2B sends it), hidden', () => {
    const key = '{"type":"service_account","private_key":"k"}';
    const spec = parseBuildSpec(withRegistry({ type: 'gcp', serviceAccountJson: key }));
    const login = 'image' in spec.from ? spec.from.registry : undefined;
    assert.ok(login);
    assert.equal(login.username, '_json_key');
    assert.equal(login.password, key);
    assert.ok(!JSON.stringify(spec).includes('private_key'));
    assert.throws(
      () => parseBuildSpec(withRegistry({ type: 'gcp' })),
      (e: Error) => field(e) === 'fromImageRegistry.serviceAccountJson' && /must be a string/.test(e.message),
    );
  });

  it('malformed credentials are refused naming the field, never echoing a value', () => {
    const bad: [unknown, string, RegExp][] = [
      ['robot:pw', 'fromImageRegistry', /must be an object/],
      [[], 'fromImageRegistry', /must be an object/],
      [{ username: 'u', password: 'p' }, 'fromImageRegistry.type', /must be a string/],
      [
        { type: 'docker', username: 'u', password: 'p' },
        'fromImageRegistry.type',
        /"docker" is not a registry type/,
      ],
      [
        { type: 'constructor', username: 'u', password: 'p' },
        'fromImageRegistry.type',
        /is not a registry type/,
      ],
      [{ type: 'registry', password: 'hunter2' }, 'fromImageRegistry.username', /must be a string/],
      [
        { type: 'registry', username: '', password: 'hunter2' },
        'fromImageRegistry.username',
        /must not be empty/,
      ],
      [{ type: 'registry', username: 'a:b', password: 'hunter2' }, 'fromImageRegistry.username', /":"/],
      [{ type: 'registry', username: 'u' }, 'fromImageRegistry.password', /must be a string/],
      [{ type: 'registry', username: 'u', password: 7 }, 'fromImageRegistry.password', /must be a string/],
      [{ type: 'registry', username: 'u', password: '' }, 'fromImageRegistry.password', /must not be empty/],
      [{ type: 'registry', username: 'u', password: 'hunter2\0' }, 'fromImageRegistry.password', /NUL/],
      [
        { type: 'registry', username: 'u', password: 'h'.repeat(16_385) },
        'fromImageRegistry.password',
        /at most 16384/,
      ],
    ];
    for (const [r, f, re] of bad)
      assert.throws(
        () => parseBuildSpec(withRegistry(r)),
        (e: Error & { code?: string }) =>
          e.code === 'invalid_argument' &&
          field(e) === f &&
          re.test(e.message) &&
          !e.message.includes('hunter2'),
        JSON.stringify(r),
      );
  });
});

describe('layer keys', () => {
  const run = (cmd: string, force = false) => ({ kind: 'RUN' as const, cmd, force });
  it('chain over the parent and each step; force is not part of the key', () => {
    const root = rootLayerKey('snap-1');
    assert.notEqual(root, rootLayerKey('snap-2'));
    const a = layerKey(root, run('echo a'));
    assert.equal(a, layerKey(root, run('echo a', true)));
    assert.notEqual(a, layerKey(root, run('echo b')));
    assert.notEqual(layerKey(a, run('x')), layerKey(layerKey(root, run('echo b')), run('x')));
    assert.match(a, /^[0-9a-f]{64}$/);
  });
  it('a COPY key changes with its files hash', () => {
    const c = (h: string) => ({ kind: 'COPY' as const, src: 'a', dest: '/a', filesHash: h, force: false });
    assert.notEqual(layerKey('k', c(HASH)), layerKey('k', c('b'.repeat(64))));
  });
  it('layer and template snapshot names are internal', () => {
    assert.match(layerName('f'.repeat(64)), /^kiln-layer-f{40}$/);
    assert.equal(isInternalSnapshotName(layerName('0')), true);
    assert.equal(isInternalSnapshotName('kiln-tpl-bld-1'), true);
    assert.equal(isInternalSnapshotName('my-snap'), false);
    assert.equal(isInternalSnapshotName(null), false);
  });
});

describe('log cursor, names', () => {
  it('logsFrom pages by offset (100 by default) and refuses a bad offset', () => {
    const all = Array.from({ length: 250 }, (_, i) => i);
    assert.deepEqual(logsFrom(all, undefined).length, 100);
    assert.deepEqual(logsFrom(all, '200'), all.slice(200));
    assert.deepEqual(logsFrom(all, 250), []);
    assert.throws(() => logsFrom(all, '-1'), /logsOffset/);
    assert.throws(() => logsFrom(all, 'x'), /logsOffset/);
  });
  it('splitNameTag and describeStep', () => {
    assert.deepEqual(splitNameTag('web:v1'), { name: 'web', tag: 'v1' });
    assert.deepEqual(splitNameTag('web'), { name: 'web' });
    assert.equal(describeStep({ kind: 'RUN', cmd: 'ls', user: 'root', force: false }), 'RUN ls (as root)');
    assert.equal(describeStep({ kind: 'ENV', envs: [['A', 'b']], force: false }), 'ENV A=b');
  });
});
