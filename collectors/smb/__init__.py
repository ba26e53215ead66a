"""The remote SMB collector: folders' Windows ACLs read over SMB2/3 from servers where nothing of ours runs.

`share.py` holds one authenticated connection to one share and reads a folder (its security descriptor and its
subfolders) in one compounded request; `tree.py` walks a share breadth-first with several folders in flight.
"""
