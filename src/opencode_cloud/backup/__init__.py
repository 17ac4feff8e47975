"""Backups of one instance, and restores: every volume and the configuration in one tar file.

What `occ backup` and `occ restore` do (docs/backup.md tells users the same):

- **The archive** is a plain (uncompressed, PAX) tar file, mode 0600, laid out as

      manifest.json          first: format, versions, instance, time, the volumes
      config/config.json     the instance's configuration file, when it has one
      config/password        the service password, only when asked for
      volumes/<kind>/...     each volume's files (home, session, state, projects, config)
      checksums.jsonl        last: one line per entry above (type, mode, owner, time,
                             size and sha256 of each file), and the manifest's sha256

  The checksums come last because they are computed while the data goes through: a
  backup never holds a volume, or even a file, in memory. `verify_archive` reads the
  whole file once (hashing its files on every CPU) and compares every entry with its
  line before anything is changed.

- **Two ways to the volumes.** A helper container, made from the sandbox image, mounts
  each volume at its own folder (`/occ-volumes/<kind>`), side by side: the service's own
  mount points nest the volumes inside the home, with host folders added by `occ mount`
  among them; the helper mounts neither, so no volume is read twice and no host folder
  is ever read.
  - *Local* (the engine runs on this machine, `DockerClient.is_local`): the
    helper also mounts the archive file itself and runs `program.py`, which copies
    between the volumes and the file directly, hashing on a second CPU (restores unpack
    with GNU tar). No byte goes through the API.
  - *Remote* (any other engine: `tcp://`, `ssh://`, contexts): the helper is never
    started; `GET`/`PUT /containers/{id}/archive` stream the volumes through this
    process.

- **Consistency**: opencode keeps SQLite databases in write-ahead-log mode in the session
  volume. The service container is paused (the kernel's cgroup freezer) while they are
  copied: none of its processes runs, so what is read is exactly what they had written
  when frozen, as after a power cut that loses nothing: a transaction half appended to
  the WAL has no commit frame yet, and SQLite's WAL recovery, when the copy is opened,
  replays the committed transactions and drops the rest. On the local path only the
  SQLite files (`*.db`, `*.sqlite`, `*.sqlite3` and their `-wal`, `-shm`, `-journal`) are
  copied while paused, first, and the rest while the service runs (manifest consistency
  `databases-paused`); on the remote path the pause lasts the whole copy (`paused`). The
  pause always ends (on errors, Ctrl-C and SIGTERM too), and its length is reported.

- **Writing the volumes** (restore): the instance's volumes are emptied by re-creating
  them, and a helper container mounts them; the archive's volume entries are unpacked
  with their owners, modes and times, while their checksum lines are computed again and
  compared with the archive's. An instance that has anything is restored only after
  `verify_archive` read the whole file; onto an empty one the contents are checked in
  that same unpacking pass (`verify_archive(contents=False)` checks the rest first),
  and a file that does not match makes the restore remove all it made.

The modules, from the format up: `errors`; `archive` (the format, the manifest, the tar
plumbing every pass shares); `program` (what a helper runs on the local path; standalone,
its source is sent); `helpers` (the helper container that mounts the volumes) and
`local` (running the program in it); `verify`, `create` and `restore`; and `backups`,
what the command line asks of them for one instance's service.
"""
