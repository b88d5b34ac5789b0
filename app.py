"""Entry point: `app` for `flask` and WSGI servers; `python app.py` to develop."""

from feed import create_app

app = create_app()

if __name__ == "__main__":
    from feed.service.devserver import main

    main()
