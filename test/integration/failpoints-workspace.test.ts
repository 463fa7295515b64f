/**
 * kill -9 of kilnd (failpoints) in the middle of a workspace push, at each of its journalled
 * steps: `workspace-push:guest staging` (the guest made the staging directory; kilnd dies before
 * sending it the tar) and `workspace-push:unpacked` (the whole repository is unpacked in the
 * staging directory, not yet moved into place). After a restart without the failpoint the push
 * is unwound: no open operation, the operation undone, nothing of it in the guest (no staging
 * directory, no workspace), the sandbox still running; and the workspace lock is free: a new push
 * of the same repository succeeds. The last test checks that these are exactly the steps a push
 * journals. Run under the VM lock: `flock /work/.vm.lock node --test <this file>`.
 */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pushRepo } from '../../src/sdk/workspace/workspace.ts';
import { CrashDaemon } from '../helpers/crash-daemon.ts';
import { git } from '../helpers/git-repo.ts';

const STEPS = ['workspace-push:guest staging', 'workspace-push:unpacked'];
const GUEST_PATH = '/home/user/proj';

describe('kill -9 in a workspace push (failpoints, real guests)', { timeout: 1_200_000 }, () => {
  let main: CrashDaemon;
  let sbx = '';
  let repo = '';
  const push = () => pushRepo(main.c.socketPath, sbx, repo, { guestPath: GUEST_PATH });
  /** What the guest's home holds of pushes: staging directories and the workspace. */
  const guestHome = (): Promise<string> =>
    main.sh(sbx, `ls -A /home/user | grep -E '^(\\.kiln-ws-|proj$)' || true`);

  before(async () => {
    main = new CrashDaemon(await mkdtemp('/tmp/kiln-fpws-'));
    repo = join(main.state, 'host', 'proj');
    mkdirSync(join(repo, 'src'), { recursive: true });
    git(repo, 'init', '-q', '-b', 'main');
    for (let i = 0; i < 50; i++) writeFileSync(join(repo, 'src', `f${i}.txt`), `file ${i}\n`.repeat(200));
    git(repo, 'add', '-A');
    git(repo, 'commit', '-qm', 'base');
    main.start();
    await main.c.buildTemplate({ name: 'base' });
    sbx = (await main.c.createSandbox({ template: 'base', timeoutS: 3600 })).sandboxId;
  });
  after(async () => {
    await main.cleanUp();
    await rm(main.state, { recursive: true, force: true });
  });

  for (const step of STEPS)
    it(`kill -9 at "${step}": the push is unwound in the guest, a new push succeeds`, async () => {
      main.stop();
      await main.dieAt(step, push);
      assert.equal(main.openOps(), 0, 'no operation left open');
      const ops = main.rows<{ state: string; error: string | null }>(
        `SELECT state, error FROM operations WHERE kind = 'workspace-push' ORDER BY started_at DESC LIMIT 1`,
      );
      assert.deepEqual(ops, [{ state: 'undone', error: 'interrupted by a daemon restart' }]);
      assert.equal((await main.c.getSandbox(sbx)).state, 'running', main.diagnosis(sbx));
      assert.equal(await guestHome(), '', 'nothing of the push is left in the guest');
      // The workspace lock is free and the guest path usable: the same push now succeeds.
      const v = await push();
      assert.equal(v.guestPath, GUEST_PATH);
      assert.equal(await main.sh(sbx, `cat ${GUEST_PATH}/src/f7.txt | head -n 1`), 'file 7\n');
      assert.equal(await guestHome(), 'proj\n', 'the workspace, and no staging directory');
      await main.sh(sbx, `rm -rf ${GUEST_PATH}`);
    });

  it('the steps covered are exactly the steps a push journals', () => {
    assert.deepEqual(main.journalled('workspace-push'), STEPS);
  });
});
