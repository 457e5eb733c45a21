"""placeholder"""
def bench_command() -> int:
    """placeholder"""
    return 0
