"""`occ doctor`: the checks that answer "why doesn't it work?" (`checks`), and who holds
a port on this machine (`ports`).
"""
