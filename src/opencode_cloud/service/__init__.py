"""One instance's service and what is done to it: start, stop, status (`service`), its
image, where it answers (`endpoint`), version changes with snapshots (`versions`,
`snapshots`) and uninstalling (`uninstall`). The command line holds a `Service`; backups
and `occ doctor` sit on top of it.
"""
