/** A list the page reads once (and again when `tick` changes): templates, images, snapshots, keys. */
import { useEffect, useState } from 'preact/hooks';
import { api } from './api.ts';

/** GET `path` now and whenever `tick` changes. */
// eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters -- T names what the route answers
export function useList<T>(path: string, tick: number): { items: T[] | undefined; err: string | undefined } {
  const [items, setItems] = useState<T[] | undefined>();
  const [err, setErr] = useState<string | undefined>();
  useEffect(() => {
    api<T[]>('GET', path)
      .then((x) => {
        setItems(x);
        setErr(undefined);
      })
      .catch((e: unknown) => {
        setErr((e as Error).message);
      });
  }, [path, tick]);
  return { items, err };
}
