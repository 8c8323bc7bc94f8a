"""One module per dataset, each with ``load(p: DataParams) -> Split`` returning raw uint8 NCHW
tensors; :func:`repurify.data.base.prepare` applies the profile's size and subset.

The registry (:func:`repurify.data.base.list_datasets`) lists these modules and imports only the
one a profile names, so a stage's code is its own dataset's loader: adding a dataset here reruns
no other profile's stages. A dataset bundled in an installed package says where it comes from in
``ORIGIN`` (the manifest's ``source``). Where files are absent and cannot be downloaded, a loader
raises :class:`~repurify.errors.DataUnavailableError` naming the exact paths to fill.
"""
