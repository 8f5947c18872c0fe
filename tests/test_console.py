"""The web console (`/_kiln/ui/`) in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`) driven by selenium. Sign in with an access key, watch a running job's log lines
arrive and its metric chart grow, stop it from its page, see a tuning job's leaderboard, and find
another account's job refused. Screenshots of each page go to `$KILN_SCREENSHOTS` (default
`tests/out/console/`); `docs/console-*.png` are copies of them."""
import json
import os
import pathlib
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from kilntest import jobs_server
from test_jobs import bundle, script_job, wait

selenium = pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("KILN_REQUIRE_BROWSER"),
                                reason="needs Debian's chromium and chromium-driver")
SHOTS = pathlib.Path(os.environ.get("KILN_SCREENSHOTS", pathlib.Path(__file__).parent / "out" / "console"))

# Prints a falling loss twice a second for ~10 s, then waits to be stopped.
TRAIN_PY = """
import time
for epoch in range(20):
    print(f"epoch={epoch} loss={1.0 / (epoch + 1):.4f} <b>not html</b>", flush=True)
    time.sleep(0.5)
print("waiting to be stopped", flush=True)
time.sleep(600)
"""


@pytest.fixture(scope="module")
def kiln():
    yield from jobs_server()


@pytest.fixture(scope="module")
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
              "--disable-gpu", "--no-first-run"):
        opts.add_argument(a)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    d = webdriver.Chrome(options=opts, service=service)
    yield d
    d.quit()


def shot(browser, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SHOTS / f"{name}.png"))


def until(browser, what, check, timeout=30):
    # Pages redraw parts of themselves as a job moves on: an element found a moment ago may be
    # gone when it is read (stale), which is "not yet", like an element not there yet.
    wait = WebDriverWait(
        browser,
        timeout,
        poll_frequency=0.2,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    )
    return wait.until(lambda d: check(d), message=what)


def chart_points(browser, metric):
    """How many points the chart of `metric` has drawn (charts are redrawn as points arrive)."""
    try:
        charts = browser.find_elements(By.CSS_SELECTOR, f".chart[data-metric='{metric}']")
        return int(charts[0].get_attribute("data-points")) if charts else None
    except StaleElementReferenceException:
        return None


def sign_in(browser, kiln, key):
    browser.delete_all_cookies()
    browser.get(f"{kiln.endpoint}/_kiln/ui/")
    assert "/_kiln/ui/login" in browser.current_url
    browser.find_element(By.NAME, "access_key_id").send_keys(key["access_key_id"])
    browser.find_element(By.NAME, "secret_access_key").send_keys(key["secret_access_key"])
    browser.find_element(By.CSS_SELECTOR, "form.login button").click()
    until(browser, "the jobs page", lambda d: d.current_url.endswith("/_kiln/ui/jobs"))


def test_nothing_without_signing_in(kiln):
    for path in ("/_kiln/ui/jobs", "/_kiln/ui/jobs/x"):
        req = urllib.request.Request(kiln.endpoint + path)
        opener = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as e:
            opener.open(req, timeout=10)
        assert e.value.code == 303 and e.value.headers["Location"] == "/_kiln/ui/login"
    for path in ("/_kiln/ui/jobs/x/metrics", "/_kiln/ui/jobs/x/logs"):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(kiln.endpoint + path, timeout=10)
        assert e.value.code == 401
    # A forged cookie is no session.
    req = urllib.request.Request(kiln.endpoint + "/_kiln/ui/jobs/x/metrics",
                                 headers={"Cookie": f"kiln_ui={kiln.key['access_key_id']}.9999999999.00"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 401


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_a_wrong_secret_is_refused(kiln, browser):
    browser.delete_all_cookies()
    browser.get(f"{kiln.endpoint}/_kiln/ui/login")
    browser.find_element(By.NAME, "access_key_id").send_keys(kiln.key["access_key_id"])
    browser.find_element(By.NAME, "secret_access_key").send_keys("not-the-secret")
    browser.find_element(By.CSS_SELECTOR, "form.login button").click()
    # The answer is a new page: wait for it (the form's page has no error element).
    until(browser, "the refusal", lambda d: d.find_elements(By.CSS_SELECTOR, ".error"))
    assert "do not match" in browser.find_element(By.CSS_SELECTOR, ".error").text
    shot(browser, "login")


def test_watch_a_running_job_and_stop_it(kiln, browser):
    sm, s3 = kiln.client(), kiln.client("s3")
    name = "console-watch"
    src = bundle(s3, "code/console/sourcedir.tar.gz", {"train.py": TRAIN_PY})
    sm.create_training_job(**script_job(name, src, hps={"learning_rate": "0.1"}))
    sign_in(browser, kiln, kiln.key)
    # The list shows it, and its status moves without a reload.
    until(browser, "the job in the list", lambda d: name in d.find_element(By.CSS_SELECTOR, "table.jobs").text)
    until(browser, "InProgress in the list",
          lambda d: "InProgress" in d.find_element(By.CSS_SELECTOR, "table.jobs").text)
    shot(browser, "jobs")
    browser.find_element(By.LINK_TEXT, name).click()
    until(browser, "the job page", lambda d: d.find_element(By.TAG_NAME, "h1").text == name)
    # Log lines arrive while the job runs (escaped, not rendered as HTML).
    logs = browser.find_element(By.CSS_SELECTOR, "pre.logs")
    until(browser, "a first log line", lambda d: "epoch=1 " in logs.text)
    assert "<b>not html</b>" in logs.text
    assert not logs.find_elements(By.TAG_NAME, "b")
    first_lines = logs.text.count("\n")
    until(browser, "more log lines", lambda d: "epoch=8 " in logs.text)
    assert logs.text.count("\n") > first_lines
    # The loss chart grows.
    points = until(browser, "a loss chart", lambda d: chart_points(d, "loss"))
    until(browser, "the chart to grow", lambda d: (chart_points(d, "loss") or 0) > points + 2)
    assert "learning_rate" in browser.find_element(By.CSS_SELECTOR, "body").text
    # The host's own metrics, as its agent samples them.
    until(browser, "the host's CPU chart", lambda d: chart_points(d, "CPUUtilization algo-1"))
    assert chart_points(browser, "MemoryUtilization algo-1")
    until(browser, "the script waiting", lambda d: "waiting to be stopped" in d.find_element(By.CSS_SELECTOR, "pre.logs").text)
    shot(browser, "job-running")
    # Stop it from the page.
    browser.find_element(By.CSS_SELECTOR, "button[data-stop]").click()
    browser.switch_to.alert.accept()
    d = wait(sm, name, timeout=60)
    assert d["TrainingJobStatus"] == "Stopped"
    # The page follows the job to its end (it reloads itself) and shows the final state.
    until(browser, "the page to show Stopped", lambda d: "Stopped" in d.find_element(By.CSS_SELECTOR, "table.kv").text, 30)
    until(browser, "the log stream to end", lambda d: "the job has ended" in d.find_element(By.CSS_SELECTOR, "pre.logs").text)
    shot(browser, "job-stopped")


def test_a_tuning_jobs_leaderboard(kiln, browser):
    sm, s3 = kiln.client(), kiln.client("s3")
    src = bundle(s3, "code/console-tune/sourcedir.tar.gz", {"train.py": (
        "import json, os\nhp = json.load(open('/opt/ml/input/config/hyperparameters.json'))\n"
        "x = float(hp['x'])\nprint(f'score={(x - 3) ** 2:.4f}', flush=True)\n")})
    training = script_job("unused", src)
    del training["TrainingJobName"]
    training.pop("HyperParameters")
    training["StaticHyperParameters"] = {"sagemaker_program": json.dumps("train.py"),
                                         "sagemaker_submit_directory": json.dumps(src)}
    training["AlgorithmSpecification"]["MetricDefinitions"] = [{"Name": "score", "Regex": r"score=([0-9.]+)"}]
    for k in ("ResourceConfig", "StoppingCondition", "OutputDataConfig", "RoleArn", "AlgorithmSpecification"):
        assert k in training
    training = {k: training[k] for k in ("StaticHyperParameters", "AlgorithmSpecification", "RoleArn",
                                         "OutputDataConfig", "ResourceConfig", "StoppingCondition")}
    sm.create_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="console-tune",
        HyperParameterTuningJobConfig={
            "Strategy": "Random",
            "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "score"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 4, "MaxParallelTrainingJobs": 2},
            "ParameterRanges": {"ContinuousParameterRanges": [{"Name": "x", "MinValue": "0", "MaxValue": "6"}]}},
        TrainingJobDefinition=training)
    deadline = time.time() + 180
    while sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="console-tune")[
            "HyperParameterTuningJobStatus"] == "InProgress":
        assert time.time() < deadline
        time.sleep(1)
    sign_in(browser, kiln, kiln.key)
    browser.get(f"{kiln.endpoint}/_kiln/ui/tuning")
    browser.find_element(By.LINK_TEXT, "console-tune").click()
    until(browser, "the tuning job's page", lambda d: d.find_elements(By.CSS_SELECTOR, "table.leaderboard"))
    rows = browser.find_elements(By.CSS_SELECTOR, "table.leaderboard tr")
    table = browser.find_element(By.CSS_SELECTOR, "table.leaderboard").text
    assert table.count("Completed") == 4, table
    # Sorted best first: the first row's score is the smallest.
    scores = [float(r.find_elements(By.TAG_NAME, "td")[3].text) for r in rows if r.find_elements(By.TAG_NAME, "td")]
    assert scores == sorted(scores) and len(scores) == 4, scores
    until(browser, "the objective chart", lambda d: d.find_elements(By.CSS_SELECTOR, ".chart[data-metric='score']"))
    assert chart_points(browser, "score") == 4 and chart_points(browser, "x → score") == 4
    shot(browser, "tuning")


def test_another_accounts_job_is_refused(kiln, browser):
    other = kiln.add_key(account="222222222222")
    key = {"access_key_id": other["AWS_ACCESS_KEY_ID"], "secret_access_key": other["AWS_SECRET_ACCESS_KEY"]}
    sign_in(browser, kiln, key)
    assert "console-watch" not in browser.find_element(By.CSS_SELECTOR, "table.jobs").text
    browser.get(f"{kiln.endpoint}/_kiln/ui/jobs/console-watch")
    assert browser.find_element(By.TAG_NAME, "h1").text == "No such training job"
    browser.get(f"{kiln.endpoint}/_kiln/ui/jobs/console-watch/metrics")
    assert "no such training job" in browser.find_element(By.TAG_NAME, "body").text


def test_an_open_log_tail_does_not_hold_up_a_shutdown():
    """A tab left open on a running job keeps a server-sent event stream open: SIGTERM must still
    stop the server promptly (the stream ends; in-flight requests finish)."""
    from kilntest import Kiln
    k = Kiln().start()
    try:
        sm, s3 = k.client(), k.client("s3")
        s3.create_bucket(Bucket="jobs")
        src = bundle(s3, "code/tail/sourcedir.tar.gz", {"train.py": "import time\nprint('up', flush=True)\ntime.sleep(600)\n"})
        sm.create_training_job(**script_job("tail-open", src))
        opener = urllib.request.build_opener(NoRedirect)
        form = urllib.parse.urlencode({"access_key_id": k.key["access_key_id"],
                                       "secret_access_key": k.key["secret_access_key"]}).encode()
        with pytest.raises(urllib.error.HTTPError) as e:
            opener.open(urllib.request.Request(k.endpoint + "/_kiln/ui/login", data=form), timeout=10)
        cookie = e.value.headers["Set-Cookie"].split(";")[0]
        stream = urllib.request.urlopen(urllib.request.Request(
            k.endpoint + "/_kiln/ui/jobs/tail-open/logs", headers={"Cookie": cookie}), timeout=30)
        deadline = time.time() + 60
        seen = b""
        while b"up" not in seen:
            assert time.time() < deadline
            seen += stream.readline()
        started = time.time()
        k.proc.send_signal(15)
        k.proc.wait(20)
        took = time.time() - started
        assert took < 8, f"the server took {took:.1f} s to stop with a log tail open"
        stream.close()
    finally:
        k.stop()


def console_cookie(k, key):
    """The session cookie of signing in with `key` ({access_key_id, secret_access_key})."""
    form = urllib.parse.urlencode({"access_key_id": key["access_key_id"],
                                   "secret_access_key": key["secret_access_key"]}).encode()
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.build_opener(NoRedirect).open(
            urllib.request.Request(k.endpoint + "/_kiln/ui/login", data=form), timeout=10)
    return e.value.headers["Set-Cookie"].split(";")[0]


def test_a_jobs_artifacts_download_from_its_page(kiln, browser):
    import io
    import tarfile
    sm, s3 = kiln.client(), kiln.client("s3")
    src = bundle(s3, "code/artifacts/sourcedir.tar.gz", {"train.py": """
import os
open(os.path.join(os.environ["SM_MODEL_DIR"], "weights.txt"), "w").write("w=42")
os.makedirs(os.environ["SM_OUTPUT_DATA_DIR"], exist_ok=True)
open(os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], "report.txt"), "w").write("all good")
"""})
    sm.create_training_job(**script_job("console-artifacts", src))
    assert wait(sm, "console-artifacts")["TrainingJobStatus"] == "Completed"
    sign_in(browser, kiln, kiln.key)
    browser.get(f"{kiln.endpoint}/_kiln/ui/jobs/console-artifacts")
    links = {a.text: a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "table.artifacts a")}
    assert set(links) == {"model.tar.gz", "output.tar.gz"}, links
    shot(browser, "job-artifacts")

    cookie = console_cookie(kiln, kiln.key)
    got = urllib.request.urlopen(urllib.request.Request(links["model.tar.gz"], headers={"Cookie": cookie}), timeout=30)
    assert got.headers["Content-Disposition"] == 'attachment; filename="console-artifacts-model.tar.gz"'
    with tarfile.open(fileobj=io.BytesIO(got.read()), mode="r:gz") as tar:
        assert tar.extractfile("weights.txt").read() == b"w=42"
    got = urllib.request.urlopen(urllib.request.Request(links["output.tar.gz"], headers={"Cookie": cookie}), timeout=30)
    with tarfile.open(fileobj=io.BytesIO(got.read()), mode="r:gz") as tar:
        assert tar.extractfile("report.txt").read() == b"all good"

    # Another account, or no session, gets nothing.
    other = kiln.add_key(account="333333333333")
    other_cookie = console_cookie(kiln, {"access_key_id": other["AWS_ACCESS_KEY_ID"],
                                         "secret_access_key": other["AWS_SECRET_ACCESS_KEY"]})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(urllib.request.Request(links["model.tar.gz"], headers={"Cookie": other_cookie}),
                               timeout=30)
    assert e.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.build_opener(NoRedirect).open(links["model.tar.gz"], timeout=30)
    assert e.value.code in (302, 303)


def test_the_warm_pools_page_lists_and_releases_a_pool(kiln, browser):
    sm, s3 = kiln.client(), kiln.client("s3")
    src = bundle(s3, "code/pool/sourcedir.tar.gz", {"train.py": "print('done', flush=True)\n"})
    req = script_job("console-pool", src)
    req["ResourceConfig"]["KeepAlivePeriodInSeconds"] = 600
    sm.create_training_job(**req)
    assert wait(sm, "console-pool")["WarmPoolStatus"]["Status"] == "Available"
    sign_in(browser, kiln, kiln.key)
    browser.get(f"{kiln.endpoint}/_kiln/ui/pools")
    rows = browser.find_elements(By.CSS_SELECTOR, "table.pools tbody tr, table.pools tr")
    row = next(r for r in rows if "console-pool" in r.text)
    assert "1 × ml.m5.large" in row.text and "10m 00s" in row.text, row.text
    assert "about 9m" in row.text or "about 10m" in row.text, row.text
    shot(browser, "pools")
    row.find_element(By.CSS_SELECTOR, "button[data-release]").click()
    browser.switch_to.alert.accept()
    deadline = time.time() + 20
    while sm.describe_training_job(TrainingJobName="console-pool")["WarmPoolStatus"]["Status"] != "Terminated":
        assert time.time() < deadline, "the Release button did not release the pool"
        time.sleep(0.2)
    until(browser, "the page without the pool", lambda b: "No warm pool is available" in b.page_source)
