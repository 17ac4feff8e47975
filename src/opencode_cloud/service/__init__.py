"""One instance's service and what is done to it: the `Service` (`service`: its spec and
lifecycle), its image (`image`), where it answers and the certificate it serves
(`endpoint`), what status reports (`status`), version changes with snapshots of the data
(`versions`, `snapshots`), uninstalling (`uninstall`) and the errors of all these
(`errors`). The command line holds a `Service`; backups and `occ doctor` sit on top of it.
"""
