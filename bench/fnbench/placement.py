async def run(*a, **k): raise NotImplementedError
