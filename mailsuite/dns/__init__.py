"""
The DNS component: authoritative answers for the local mail domains (zones generated from the
config and directory, plus BIND zone files) and a caching resolver for everything else, which
is also the IResolver the rest of the suite looks names up with.
"""
