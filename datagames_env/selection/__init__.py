"""Selection algorithms the environments themselves run (DUAL's stage-2 labeler, coverage read-outs)."""
