"""The core every room may import: errors with their exit codes, artifact and tensor types, the plugin
registry and the bundle manifest. It imports nothing from the other edgec packages except the stdlib-only
runtime shims (the bundle-file check and the golden reader that ship inside bundles)."""
