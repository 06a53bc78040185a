import asyncio, sys, time, uuid, logging, gc
tree = sys.argv[1]; conc = int(sys.argv[2]); sys.path.insert(0, tree)
import structlog, anyio
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
from stackshift import Stackshift, JobContext
N = 20000
async def main():
    app = Stackshift("redis://127.0.0.1:6379/0", prefix=f"drab-{uuid.uuid4().hex[:6]}:")
    @app.job("noop")
    async def noop(ctx: JobContext) -> None:
        return None
    q = app.queue("w2")
    out = []
    for rep in range(3):
        await q.enqueue_many("noop", [{"t": 0.0}] * N)
        worker = app.worker(["w2"], concurrency=conc)
        t = time.perf_counter()
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            while True:
                st = await app.store.queue_stats("w2")
                if st.totals.get("completed", 0) >= N * (rep + 1):
                    break
                await asyncio.sleep(0.01)
            worker.stop()
        out.append(round(N / (time.perf_counter() - t)))
    print(tree, conc, out)
    r = app.store.client
    keys = [k async for k in r.scan_iter(match=app.settings.prefix + "*", count=1000)]
    for i in range(0, len(keys), 500): await r.unlink(*keys[i:i+500])
    await app.close()
asyncio.run(main())
