"""AT reply parsers: the 3GPP TS 27.007 commands every modem answers (:mod:`.generic`) and
one module per vendor for its serving-cell report (:mod:`.quectel`, :mod:`.simcom`)."""
