"""Images: container environments defined in code (`cellhop.Image`), built with uv into cached layers.

- the spec itself, `Image` (chainable, and its JSON form), is the public cellhop/image_spec.py
- keys.py: content addresses of layers
- interpreters.py: finding a Python of a given version on this host
- steps.py: what each step does to a layer; apt.py: Debian packages without root
- store.py: layers, locks, logs and image records on disk
- builder.py: plan, build or reuse layers, progress events
- service.py: what the control plane exposes (`ControlPlane.images`)
"""
