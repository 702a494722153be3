import { describe, expect, it } from 'vitest';
import { Informer, type Watched, diffList, watchChange } from './informer.ts';
import { KubeApiError } from './kube.ts';

const obj = (name: string, resourceVersion: string, namespace = 'ml'): Watched => ({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace, resourceVersion } });
const cacheOf = (...objects: Watched[]) => new Map(objects.map((o) => [`${o.metadata.namespace}/${o.metadata.name}`, o]));

describe('informer cache changes', () => {
  it('a relist adds new objects, updates changed ones and deletes the ones gone, leaving the unchanged alone', () => {
    const cache = cacheOf(obj('same', '1'), obj('changed', '1'), obj('gone', '1'));
    const changes = diffList(cache, [obj('same', '1'), obj('changed', '2'), obj('new', '3')]);
    expect(changes.map((c) => [c.type, c.object.metadata.name])).toEqual([
      ['update', 'changed'],
      ['add', 'new'],
      ['delete', 'gone'],
    ]);
  });

  it('keys by namespace and name', () => {
    const changes = diffList(cacheOf(obj('a', '1', 'ns1')), [obj('a', '1', 'ns2')]);
    expect(changes.map((c) => [c.type, c.object.metadata.namespace])).toEqual([
      ['add', 'ns2'],
      ['delete', 'ns1'],
    ]);
  });

  it('a watch event adds, updates or deletes; bookmarks and repeats of the cached version change nothing', () => {
    const cache = cacheOf(obj('a', '1'));
    expect(watchChange(cache, { type: 'ADDED', object: obj('b', '2') })?.type).toBe('add');
    expect(watchChange(cache, { type: 'MODIFIED', object: obj('a', '2') })?.type).toBe('update');
    // A MODIFIED for an object the cache never saw (its ADDED was before our list) is an add.
    expect(watchChange(cache, { type: 'MODIFIED', object: obj('c', '4') })?.type).toBe('add');
    expect(watchChange(cache, { type: 'DELETED', object: obj('a', '3') })?.type).toBe('delete');
    expect(watchChange(cache, { type: 'MODIFIED', object: obj('a', '1') })).toBeUndefined();
    expect(watchChange(cache, { type: 'BOOKMARK', object: obj('', '9') })).toBeUndefined();
  });
});

describe('Informer list and watch', () => {
  /** A client that answers lists from `lists` in turn and plays `watches` in turn (each: events, then how it ends). */
  function fakeClient(lists: Watched[][], watches: { events: unknown[]; end: 'close' | Error }[]) {
    const calls: string[] = [];
    const client = {
      list: async () => {
        const items = lists.shift() ?? [];
        calls.push(`list ${items.map((i) => i.metadata.name).join(',')}`);
        return { items, metadata: { resourceVersion: `list-${calls.length}` } };
      },
      watch: async (_ref: unknown, options: { resourceVersion: string; onOpen?: () => void }, onEvent: (e: never) => void, signal: AbortSignal) => {
        calls.push(`watch from ${options.resourceVersion}`);
        const next = watches.shift();
        if (!next) return new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve()));
        options.onOpen?.();
        for (const event of next.events) onEvent(event as never);
        if (next.end instanceof Error) throw next.end;
      },
    };
    return { client, calls };
  }

  it('follows the watch from the last resourceVersion, and lists again on 410 Gone', async () => {
    const { client, calls } = fakeClient(
      [[obj('a', '1')], [obj('a', '5'), obj('c', '6')]],
      [
        { events: [{ type: 'ADDED', object: obj('b', '2') }, { type: 'BOOKMARK', object: { metadata: { resourceVersion: '3' } } }], end: 'close' },
        { events: [], end: new KubeApiError(410, 'Expired', 'too old resource version') },
      ],
    );
    const informer = new Informer<Watched>(client as never, { ref: { apiVersion: 'v1', plural: 'services' }, kind: 'Service' });
    const seen: string[] = [];
    for (const type of ['add', 'update', 'delete'] as const) informer.on(type, (o) => seen.push(`${type} ${o.metadata.name}`));
    await informer.start();
    await new Promise((resolve) => setTimeout(resolve, 20));
    await informer.stop();
    expect(calls).toEqual(['list a', 'watch from list-1', 'watch from 3', 'list a,c', 'watch from list-4']);
    expect(seen).toEqual(['add a', 'add b', 'update a', 'add c', 'delete b']);
    expect(informer.list().map((o) => o.metadata.name).sort()).toEqual(['a', 'c']);
    expect(informer.get('a', 'ml')?.metadata.resourceVersion).toBe('5');
  });

  it('reports a broken watch as an error, so its owner restarts it', async () => {
    const { client } = fakeClient([[]], [{ events: [], end: new Error('connection reset') }]);
    const informer = new Informer<Watched>(client as never, { ref: { apiVersion: 'v1', plural: 'services' }, kind: 'Service' });
    const errors: string[] = [];
    informer.on('error', (e) => errors.push(e.message));
    await informer.start();
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(errors).toEqual(['connection reset']);
  });
});

describe('Informer index', () => {
  it('finds objects by their indexBy value, following updates and deletes', async () => {
    const owned = (name: string, rv: string, owner: string): Watched => ({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name, namespace: 'ml', resourceVersion: rv, ownerReferences: [{ apiVersion: 'modelplane.ai/v1alpha1', kind: 'ModelService', name: owner, uid: `uid-${owner}`, controller: true }] },
    });
    const events = [
      { type: 'MODIFIED', object: owned('b', '3', 'y') },
      { type: 'DELETED', object: owned('c', '4', 'x') },
    ];
    let played = false;
    const client = {
      list: async () => ({ items: [owned('a', '1', 'x'), owned('b', '1', 'x'), owned('c', '1', 'x')], metadata: { resourceVersion: '2' } }),
      watch: async (_ref: unknown, _o: unknown, onEvent: (e: never) => void, signal: AbortSignal) => {
        if (!played) {
          played = true;
          for (const event of events) onEvent(event as never);
        }
        return new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve()));
      },
    };
    const informer = new Informer<Watched>(client as never, {
      ref: { apiVersion: 'v1', plural: 'services' },
      kind: 'Service',
      indexBy: (o) => o.metadata.ownerReferences?.find((r) => r.controller)?.uid,
    });
    await informer.start();
    await new Promise((resolve) => setTimeout(resolve, 10));
    await informer.stop();
    expect(informer.byIndex('uid-x').map((o) => o.metadata.name)).toEqual(['a']);
    expect(informer.byIndex('uid-y').map((o) => o.metadata.name)).toEqual(['b']);
    expect(informer.byIndex('uid-z')).toEqual([]);
  });
});
