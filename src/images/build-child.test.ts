import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { KilnError } from '../core/errors.ts';
import { buildDefaultImageInChild } from './build-child.ts';

describe('image build in a child process', () => {
  it("brings the child's error back with its code and message", async () => {
    await assert.rejects(buildDefaultImageInChild('/dev/null/cache'), (e: unknown) => {
      assert.ok(e instanceof KilnError);
      assert.equal(e.code, 'internal');
      assert.match(e.message, /ENOTDIR: not a directory, mkdir '\/dev\/null\/cache'/);
      return true;
    });
  });
});
