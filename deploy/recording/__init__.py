"""Session recordings: what the control loop did, as MCAP files that Foxglove (and ``ros2 bag``) open.

Split so that the live server pays almost nothing for a recording (docs/recording.md):
:mod:`~srghn.deploy.recording.tap` runs in the server process and only hands batches on;
:mod:`~srghn.deploy.recording.recorder` is the process that decodes and writes them with
:mod:`~srghn.deploy.recording.writer`, out of the server's interpreter lock; :mod:`~srghn.deploy.recording.files`
reads them back; :mod:`~srghn.deploy.recording.format` is what they share.
"""
