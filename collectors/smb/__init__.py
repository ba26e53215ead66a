"""The remote SMB collector: folders' Windows ACLs read over SMB2/3 from servers where nothing of ours runs.

`share.py` holds one authenticated connection to one share and reads a folder (its security descriptor and its
subfolders) in one compounded request, through `channel.py` (the socket once smbprotocol has set the session up)
and `wire.py` (the requests' bytes); `tree.py` walks a share breadth-first with several folders in flight;
`notify.py` keeps a change notification per folder; `loop.py` and `collector.py` turn it all into events;
`srvsvc.py` reads the share's own ACL.
"""
