"""Mining economics: validator rules, selector, rehearsal miner loop, ledger, real-miner log reader.

Plain asyncio and dataclasses; nothing here imports Textual or torch.
"""
