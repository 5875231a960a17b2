"""The security suite: every test here reproduces one attack or hostile input (issue 16) and checks it is refused.

Each test fails on the code before the hardening and passes now; the README's security section lists them.
"""
