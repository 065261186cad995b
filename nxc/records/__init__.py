"""Run records and what is made from them: everything a run used and produced,
gathered as the run happens (:mod:`nxc.records.gather`, :mod:`nxc.records.host`),
summarised (:mod:`nxc.records.summary`), published as one archive
(:mod:`nxc.records.publish`), verified (:mod:`nxc.records.verify`) and reproduced
(:mod:`nxc.records.reproduce`). The record's directory itself is
:class:`nxc.runs.RunRecord`.
"""
