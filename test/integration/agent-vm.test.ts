/**
 * The guest agent inside a real QEMU guest booted from `kiln image build`'s image, driven by the
 * real `e2b` SDK through the forwarded port (a stub control plane hands the SDK the address and
 * token, as kiln's daemon will). Default user `user`, like E2B's base template.
 */
import { envdSuite } from '../envd/envd.suite.ts';
import { bootAgentVm } from '../helpers/guest.ts';

envdSuite('agent in a QEMU guest (TCG), user "user"', async () => {
  const vm = await bootAgentVm({ envVars: { KILN_INIT_VAR: 'from-init' } });
  const dir = '/home/user/kiln-test';
  await vm.sandbox.files.makeDir(dir);
  return {
    sandbox: vm.sandbox,
    agentUrl: vm.agentUrl,
    accessToken: vm.accessToken,
    defaultUser: 'user',
    dir,
    homeRelativeDir: 'kiln-test',
    otherUser: { name: 'user' },
    disposable: true,
    close: vm.close,
  };
});
