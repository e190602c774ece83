"""The technician station's Qt (PySide6) application: ``station gui`` and ``station demo --gui``.

PySide6 is imported only under this package (STYLE.md item 11). Layout::

    theme        ISA-101 colours, fonts, and the look of each slot state (word + icon + colour)
    scanner      barcode classification (pure) and the application-level key filter (Qt)
    (roles)      who may do what: the one permission table lives in station.roles (pure, shared with the CLI)
    models       slot, results and timeline models the widgets show
    worker       a QObject per slot on its own QThread, calling the Provisioner, reporting by signals
    controller   the line: work order, operator, slots, counts; owns workers; no widget code
    session      sign-in/out, idle sign-out, kiosk guard, refusals to the audit log
    widgets      tiles, banner, result list, timeline, sign-in and admin pages
    window       the main window putting pages together by role
    embedded     the embedded demo station (SoftHSM CA, virtual devices, SQLite, seeded operators)
    screenshots  ``station gui --screenshots DIR``
    demo         ``station demo --gui``
    cli          ``station gui``

The quality role's audit view lives in ``station.gui.audit`` (issue 6) and is imported lazily.
"""
