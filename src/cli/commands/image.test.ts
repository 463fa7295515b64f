import assert from 'node:assert/strict';
import { test } from 'node:test';
import { nameFromReference } from './image.ts';

test('an image built --from-image is named after the repository and tag (or short digest)', () => {
  assert.equal(nameFromReference('127.0.0.1:5000/team/web-app:v1.2'), 'web-app-v1.2');
  assert.equal(nameFromReference('localhost:5000/app'), 'app-latest');
  assert.equal(nameFromReference(`reg.example.com/app@sha256:${'ab'.repeat(32)}`), 'app-abababababab');
  assert.equal(nameFromReference('localhost:5000/app:V_1..x'), 'app-v_1.x');
});
