"""The web client in a real browser: Chromium (driven by selenium) opens the server's page,
logs in, is in the room, reads what an IRC user wrote over TCP and answers it.

Needs Debian's ``chromium`` and ``chromium-driver`` and the web client (``make web``);
``.ci/run`` installs all three.  The screenshot of the page at the end is saved as
``browser.png`` in the test's output directory (pytest's ``tmp_path``).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocols.web.site import DEFAULT_CLIENT_DIR
from tests.support.server import LineClient, ServerProcess

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None or CHROMEDRIVER is None, reason="chromium and chromium-driver needed"
    ),
    pytest.mark.skipif(
        not (DEFAULT_CLIENT_DIR / "converse.min.js").is_file(),
        reason="the web client is not installed (make web)",
    ),
]

WAIT = 30


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    assert CHROMIUM is not None and CHROMEDRIVER is not None
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,800",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def test_browser_logs_in_and_chats_with_an_irc_user(
    tmp_path: Path, make_server, browser: webdriver.Chrome
) -> None:
    server: ServerProcess = make_server(
        protocols=("irc", "xmpp", "web"), overrides={"web": {"default_rooms": ["lobby"]}}
    )
    server.create_account("webby", "correct horse battery")
    irc = LineClient(server.ports["irc"], timeout=WAIT)
    irc.send("NICK ircuser")
    irc.send("USER i 0 * :i")
    irc.expect(" 001 ircuser ")
    irc.send("JOIN #lobby")
    irc.expect(" 366 ")

    url = f"http://127.0.0.1:{server.ports['web']}/"
    browser.get(url)
    wait = WebDriverWait(browser, WAIT)
    # The page says which rooms it joins, and who else is there.
    about = browser.find_element(By.ID, "about").text
    assert "lobby" in about and "IRC" in about and "telnet" in about

    jid = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "input[name=jid]")))
    jid.send_keys("webby")
    password = browser.find_element(By.CSS_SELECTOR, "input[name=password]")
    password.send_keys("correct horse battery")
    password.send_keys(Keys.ENTER)

    # Joined on login: the IRC user sees the browser's user arrive.
    irc.expect(lambda line: "JOIN" in line and line.startswith(":webby!"))
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "converse-muc textarea")))

    irc.send("PRIVMSG #lobby :hello browser, this is IRC")
    wait.until(
        ec.text_to_be_present_in_element(
            (By.CSS_SELECTOR, "converse-muc .chat-content"), "hello browser, this is IRC"
        )
    )
    box = browser.find_element(By.CSS_SELECTOR, "converse-muc textarea")
    box.send_keys("hello IRC, this is the browser")
    box.send_keys(Keys.ENTER)
    line = irc.expect("hello IRC, this is the browser")
    assert line.startswith(":webby!") and "PRIVMSG #lobby :" in line
    wait.until(
        ec.text_to_be_present_in_element(
            (By.CSS_SELECTOR, "converse-muc .chat-content"), "hello IRC, this is the browser"
        )
    )
    # The page's banner covers nothing of Converse: its own header (the account's avatar, the
    # room's title) starts below the banner, and the message box is in the window.
    layout = browser.execute_script(
        """
        const box = (css) => document.querySelector(css).getBoundingClientRect();
        return {
          banner: box("#about").bottom,
          profile: box("converse-user-profile").top,
          heading: box("converse-muc-heading").top,
          textarea: box("converse-muc textarea").top,
          window: window.innerHeight,
        };
        """
    )
    assert layout["banner"] <= layout["profile"], layout
    assert layout["banner"] <= layout["heading"], layout
    assert layout["textarea"] + 20 <= layout["window"], layout
    shot = tmp_path / "browser.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    irc.close()
