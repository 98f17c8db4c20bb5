"""The floor every template and every generated project stands on: standard library only.

- ``wire``: the protocol's constants, params, error codes and base85;
- ``server``: the handler a template implements and the JSON-RPC loop; ``client``: launch a
  server and call it with deadlines; ``project``: TemplateProject and GeneratedProject;
- ``options``: the option schema, validation and coercion; ``errors``: every error class;
- ``record``: the project record (utvm-project.json), read by every step after generation;
- ``child_process``: processes over pipes that never outlive their owner; ``output_pump``;
- ``mlf``: the Model Library Format reader; ``npy``: .npy/.npz without numpy;
- ``board_records``: board records and the fit check; ``flash_runners``, ``usb_discovery``,
  ``qemu``, ``elf_sizes``, ``emulator_clock``: what templates share to reach boards;
- ``template_support``, ``floor_copy``: what template servers share.

Templates import it as ``project_api`` (from the utvm package, or from the copy a generated project
carries); the rest of utvm imports it as ``utvm.project_api``. See docs/project-api.md.
"""
