"""placeholder"""
def demo_command() -> int:
    """placeholder"""
    return 0
