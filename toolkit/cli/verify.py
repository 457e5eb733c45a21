"""placeholder"""
def verify_command() -> int:
    """placeholder"""
    return 0
